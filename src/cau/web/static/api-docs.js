// /api/docs: starts Swagger UI (served from /static/swagger-ui) on this server's OpenAPI document.
// A file, not an inline script: the page runs under the dashboard's Content-Security-Policy.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // No badge from an outside validator: nothing leaves this server.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    // "Try it out" calls the API with this page's session, which needs the CSRF token to change
    // anything (reads go without it).
    requestInterceptor: (request) => {
      if (csrf && !["GET", "HEAD", "OPTIONS"].includes((request.method || "GET").toUpperCase())) {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
});
